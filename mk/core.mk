# System packages the kernel suite needs: Xvfb for the %gui tk test.
SYSTEM_DEPS += install-xvfb

install-xvfb:
	@command -v Xvfb >/dev/null || { apt-get update -qq && apt-get install -y -qq xvfb >/dev/null; }
