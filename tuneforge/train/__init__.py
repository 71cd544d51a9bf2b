"""Stage 2: training (SFT with LoRA or full fine-tuning, DPO). See `estimate.py` for the figures the
data stage already needs: the default number of epochs and the expected speed on this machine."""
