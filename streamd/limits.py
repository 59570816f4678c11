"""Bounds shared by the [inference] settings and a network's `metadata.streamd` overrides, so the two
cannot drift apart. Pure constants."""

MAX_BATCH_SIZE = 1024
MAX_WAIT_S = 10.0
MAX_INFLIGHT_BATCHES = 8  # batches of one network at once: the bound of both settings, and the threads
MAX_OP_THREADS = 256  # TensorFlow intra-op and inter-op threads
