"""Weight loading: safe readers (io.py) and the Wan / Wan-Alpha VAE formats (wan_vae.py).

Kept import-light: submodules are imported where they are used."""
