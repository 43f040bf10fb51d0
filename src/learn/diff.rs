//! `buntime policy diff` and `buntime policy suggest --from-audit` (filled in below).
