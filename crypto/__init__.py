"""Simpul crypto: node keys, certificates, signatures, encryption and key files (no network, no SQL)."""
