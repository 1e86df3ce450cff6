"""The shipped data as a package, so that an entry point can name it (``lm_eval.tasks``).

lm-eval's proposed task plugins (EleutherAI/lm-evaluation-harness#4015) take a dotted
package name and scan its folder for YAML: ``relneuron_eval._data.tasks``. In a wheel
``tasks/`` and ``neuron_sets/`` lie in this folder; in a source checkout (an editable
install) they are the top-level folders of the checkout, so the package also searches
the checkout's root. Either way the name resolves to ``resources.tasks_dir()``.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
if not (_HERE / "tasks").is_dir():
    __path__.append(str(_HERE.parent.parent))
