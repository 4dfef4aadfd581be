"""Call queues: callers wait in line with music and their position, agents take calls
by strategy."""
