//! Type-independent access to a store, for tools such as `varve`: raw records, verification,
//! backup, export and import.
