-- How many agents of each region probe a domain when a region runs several (agents split the
-- region's domains by rendezvous hashing): 1 by default, 2 for a domain that wants a second
-- opinion from inside the region.
ALTER TABLE domains ADD COLUMN agents_per_region smallint NOT NULL DEFAULT 1
    CHECK (agents_per_region BETWEEN 1 AND 2);
