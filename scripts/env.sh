# Build environment shared by cargo, the tests and the notebook kernel. Source it, don't run it.
#
# Every build of this repository (cargo test, the notebook's library, the generator, every clone
# on this machine) uses one target folder outside the clone, so Polars and deltalake are compiled
# once. Nothing else is set: the notebook kernel gets the same two variables from its launcher
# (scripts/kernel/launch), which sources this file.
AQUABILL_CACHE="${AQUABILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aquabill}"
export AQUABILL_CACHE
export CARGO_TARGET_DIR="$AQUABILL_CACHE/target"
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
