"""``relneuron report``: the papers' experiments as lm-eval runs, written as markdown and figures."""
