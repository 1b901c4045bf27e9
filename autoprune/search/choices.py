"""The names the search accepts, importable without loading optuna or torch (the CLI reads them)."""

SAMPLERS = ("tpe", "gp", "cmaes", "nsga2", "random")
PRUNERS = ("wilcoxon", "median", "none")
PROXIES = ("recal",)
PRIORS = ("sensitivity", "uniform")
SPACES = ("group", "stage")
CRITERIA = ("l1", "l2", "bn_gamma", "random")
SENSITIVITY_METHODS = ("sr-init", "sbpf", "bn-gamma")
