"""gpuheal: GPU node remediation for Kubernetes on Temporal."""
