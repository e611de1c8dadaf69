"""One self-contained module per paper. Each file imports only torch, torchvision, einops and the standard
library, so you can copy it alone into your project. See README.md for the list."""
