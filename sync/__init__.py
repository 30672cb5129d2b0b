"""Simpul sync: records as Automerge documents, feeds, frontiers, the store, the engine."""
