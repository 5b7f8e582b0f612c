"""Output units of the model: characters, phones or subwords behind one interface (base.Units),
and the normalisation of text into the project's characters (characters.py)."""
