"""Who is calling: credentials, tokens, roles, and a brake on guessing.

    keys          access keys, secrets (hashed), roles, task keys, JWT tokens
    login_guard   back-off per key and per address for failed sign-ins
"""
