# Kernel environments besides the main one (ipykernel 7 + IPython 9): each gets its own venv
# with ipymcp installed, and the tests marked `compat` run with kernels launched from it.
KERNEL_ENVS := k6 colab
k6_PINS := "ipykernel==6.29.5" "ipython>=8.30,<9" "ipywidgets>=8"
colab_PINS := "ipykernel==6.17.1" "ipython==7.34.0" "tornado==6.5.1" "ipywidgets==7.7.1"

.venvs/%/.installed: pyproject.toml
	rm -rf .venvs/$*
	$(PY) -m venv .venvs/$*
	.venvs/$*/bin/python -m pip --disable-pip-version-check -q install $($*_PINS) -e . numpy pandas matplotlib pillow sympy xarray 2>&1 | grep -v '^WARNING: Location' || true
	.venvs/$*/bin/python -c "import ipymcp, ipykernel, IPython; print('$*', ipykernel.__version__, IPython.__version__)"
	touch $@

# The environments run side by side (each mostly waits for its kernels): ~6 min instead of ~12 in
# CI. Each one's output is printed whole when both have finished.
test-compat: env $(foreach e,$(KERNEL_ENVS),.venvs/$(e)/.installed)
	@logs=$$(mktemp -d); pids=""; \
	for e in $(KERNEL_ENVS); do \
	  IPYMCP_KERNEL_PYTHON=$$PWD/.venvs/$$e/bin/python $(PYTEST) tests -m compat -q -p no:cacheprovider \
	    > $$logs/$$e.log 2>&1 & pids="$$pids $$!"; \
	done; \
	status=0; for p in $$pids; do wait $$p || status=1; done; \
	for e in $(KERNEL_ENVS); do echo "== compat: kernels from .venvs/$$e"; cat $$logs/$$e.log; done; \
	rm -rf $$logs; exit $$status
