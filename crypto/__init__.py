"""Simpul crypto: keys, certificates, signatures, encryption, key files (no network, no SQL)."""
