"""Old import path of :mod:`nni_topo_pruner.bmvc.pruner` (the BMVC paper's code lives in
``nni_topo_pruner/bmvc/``): this name *is* that module, so existing imports, pickles and
monkeypatches keep working."""
import sys

from .bmvc import pruner

sys.modules[__name__] = pruner
