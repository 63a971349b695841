# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    """The service's metric names, for the modules that read /metrics (module_utils._metrics.metric_argument_spec)."""

    DOCUMENTATION = r"""
options:
  requests_metric:
    description: Counter of requests (summed over all its labels).
    type: str
    default: queries_total
  errors_metric:
    description: Counter of failed requests (summed over all its labels).
    type: str
    default: query_errors_total
  duration_metric:
    description: Histogram of request durations in seconds (without the C(_bucket) suffix).
    type: str
    default: query_duration_seconds
"""
