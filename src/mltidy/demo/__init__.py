"""The demo sandbox: real training jobs, really killed, and the hygiene loop run on them."""
