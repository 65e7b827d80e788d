//! Policy → iptables-restore input. (Being written.)
