//! iptables-save → policy. (Being written.)
