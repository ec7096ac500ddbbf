mod burst;
mod certs;
mod daemon;
mod durability;
mod keystore;
