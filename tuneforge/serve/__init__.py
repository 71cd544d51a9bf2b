"""Stage 4's HTTP door: the OpenAI-compatible server (app.py), its protocol models and routes/."""
