-- Version 7: ward censuses list chart ids only (chartsync/census@2). A version-1 census kept
-- the MRN, name and bed of everyone who was ever on the ward in its history; it is dropped
-- here, on the server and on every tablet. The server writes the new censuses from its index
-- when it starts; a tablet fetches them on its next sync and keeps the charts it has.
DELETE FROM census_docs;
