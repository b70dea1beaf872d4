"""Protected aggregation: CKKS encryption (TenSEAL), pairwise and self masks, signed updates.

Sites hold the secret context; the server holds a context with the encryption parameters
only (no secret, public, Galois or relinearisation keys) and can add ciphertexts, nothing else.
With a site registry, each update is also masked so that only the sum of all participants
decrypts, and signed with the site's node key (``protection.py`` says what a site sends).
"""
