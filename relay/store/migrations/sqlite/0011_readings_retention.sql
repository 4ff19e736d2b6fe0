-- Readings retention (docs/privacy.md): the prune task deletes readings
-- taken before a cutoff in small batches; without this index every batch
-- would scan the whole table.
CREATE INDEX readings_taken ON readings (taken_at);
