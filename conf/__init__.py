"""tdgs-train's Hydra configuration (config groups as folders of YAML files). A folder at the top of
the repository, installed as the package ``tdgs.conf`` (pyproject.toml maps it), so that an
installed tdgs finds it with importlib.resources, editable or not."""
