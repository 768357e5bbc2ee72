//! Background tasks owned by a value: aborted when it is dropped.

use tokio::task::JoinHandle;

/// Tasks that stop when their owner (the broadcaster, a backplane) is dropped.
#[derive(Debug, Default)]
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// `tasks`, owned from now on.
    pub(crate) fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        Self(tasks)
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
