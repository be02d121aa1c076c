//! Features, linfa training, the serving index and offline evaluation of
//! shopstream's recommendations. (Filled by the recommender work; the
//! service builds and runs without it.)
