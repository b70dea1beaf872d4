"""Credentials for deployment: a CA and the SuperLink's TLS certificate, and each site's node key pair."""
