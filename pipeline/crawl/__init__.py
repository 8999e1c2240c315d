"""Fetching the web: HTTP with retries, image validation, search engines, the avatar and face crawls."""
