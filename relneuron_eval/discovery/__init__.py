"""Neuron discovery: relation-specific neurons (Liu et al. 2025) and knowledge neurons
(Dai et al. 2022), written as neuron sets that ``relneuron-hf`` can intervene on."""
