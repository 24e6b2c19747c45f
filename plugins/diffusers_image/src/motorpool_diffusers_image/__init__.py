"""motorpool engine plugin: diffusers text-to-image and image-to-image."""
