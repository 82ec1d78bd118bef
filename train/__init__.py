"""SFT warm-start, LoRA GRPO training and one-command retraining on new mail."""
