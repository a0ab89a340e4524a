"""gradprobe: see vanishing and exploding gradients in any PyTorch model."""
