IMAGE_SIZE = 112  # pixels per side; 112 / 14 patches / 2 merge -> 16 Qwen2-VL image tokens
