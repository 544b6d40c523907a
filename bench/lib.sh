# Shared by the benchmark scripts (sourced).

# Waits (bounded) for a line matching $2 in file $1 and prints the URL in it.
wait_for_url() {
    local file=$1 pattern=$2
    for _ in $(seq 1 300); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            grep -o "$pattern[^ ]*" "$file" | head -1 | sed "s|$pattern||"
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for '$pattern' in $file:" >&2
    cat "$file" >&2
    return 1
}
