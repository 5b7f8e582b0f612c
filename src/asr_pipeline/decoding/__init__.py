"""From CTC log-probabilities to words: greedy and beam-search decoders, the word n-gram language
model of the beam search, and error rates."""
