-- A migration in the reserved range (below 1000), which a registry must refuse.
SELECT 1;
