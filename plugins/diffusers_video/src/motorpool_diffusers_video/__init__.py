"""motorpool engine plugin: text-to-video and image-to-video with Hugging Face diffusers."""
