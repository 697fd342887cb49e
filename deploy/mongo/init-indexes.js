// Creates the products collection and its indexes when the MongoDB container
// initialises an empty data volume (scripts in /docker-entrypoint-initdb.d run
// once, on first start). products-service creates the same indexes at startup,
// idempotently: names and keys here must stay identical to
// crates/products-service/src/adapters/mongo.rs (ensure_indexes), or MongoDB
// rejects the service's createIndexes with IndexOptionsConflict.
const dbName = process.env.PRODUCTS_MONGO_DB || "products";
const collectionName = process.env.PRODUCTS_MONGO_COLLECTION || "products";

const database = db.getSiblingDB(dbName);
if (!database.getCollectionNames().includes(collectionName)) {
  database.createCollection(collectionName);
}

const result = database.getCollection(collectionName).createIndexes([
  { key: { categoryId: 1 }, name: "categoryId_1" },
  { key: { name: 1, _id: 1 }, name: "name_1__id_1" },
]);
print(`init-indexes: ${dbName}.${collectionName}: ${JSON.stringify(result)}`);
