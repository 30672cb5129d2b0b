"""Simpul sync: household records as Automerge documents, feeds, frontiers, the store and the engine."""
