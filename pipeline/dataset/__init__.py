"""Leak-free splits, uint8 shards and the checksum-verified loader."""
