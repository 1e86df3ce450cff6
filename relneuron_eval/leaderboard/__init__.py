"""``relneuron leaderboard``: neuron-finding methods scored per relation and budget."""
