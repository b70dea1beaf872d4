"""The hospital's Flower ClientApp (and, in ``Dockerfile``, its container)."""
