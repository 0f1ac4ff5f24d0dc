"""What the device keeps on disk: the encrypted gallery, its key, the SQLite store, the
append-only audit log."""
