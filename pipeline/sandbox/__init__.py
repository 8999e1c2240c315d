"""The sandbox web: an offline avatar API, image search and photo host on 127.0.0.1."""
