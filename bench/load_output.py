"""What wrk and h2load printed, for bench/http.sh's reports."""
import re


def completed(tool, text, what):
    """(requests per second, requests completed) of one wrk or h2load run;
    fails, naming `what`, if any request failed."""
    if tool == "wrk":
        assert "Non-2xx" not in text and "Socket errors" not in text, f"wrk {what}: errors"
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        done = int(re.search(r"(\d+) requests in", text).group(1))
    else:
        failed = int(re.search(r"requests: .* (\d+) failed", text).group(1))
        assert failed == 0, f"h2load {what}: {failed} failed"
        rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
        done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
    return rate, done
