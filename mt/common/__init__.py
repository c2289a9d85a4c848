"""The shared layer every package builds on: errors, files (atomic writes, locks, identities), text I/O,
language codes, Unicode scripts, process groups, page residency of memory-mapped files and the flag builder."""
