"""``relneuron export``: a variant as a PEFT IA3 adapter or a checkpoint for serving engines."""
