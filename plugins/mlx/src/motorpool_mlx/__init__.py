"""motorpool engine plugin: MLX (mlx-lm) text generation."""
