"""img2caricature: the library behind the DVC stages."""
