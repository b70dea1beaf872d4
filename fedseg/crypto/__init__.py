"""Homomorphically encrypted aggregation (TenSEAL, CKKS): keys, packing, and the encrypted sum.

Sites hold the secret context; the server holds a context with the encryption parameters
only (no secret, public, Galois or relinearisation keys) and can add ciphertexts, nothing else.
"""
